/* libFuzzer target: HTTP/1 request reader (pieces, pipelining, small limits); see h1_fuzz_common.h.
 */
#include "h1_fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_run(data, size, true);
    return 0;
}
