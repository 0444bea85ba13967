/* `ferry replay`: not written yet (see tools.h). */
#include <stdio.h>

#include "tools/tools.h"

int fy_cmd_replay(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry replay: not available in this build yet\n");
    return 1;
}
