/* libFuzzer target: HTTP/1 response reader (interim responses, HEAD, close-delimited bodies). */
#include "h1_fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_run(data, size, false);
    return 0;
}
