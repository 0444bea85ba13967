/* See builtin.h. */
#include "filters/builtin.h"

#include "filters/compress.h"
#include "filters/forwarded.h"
#include "filters/hdr_rules.h"

void fy_filters_register_builtin(void)
{
    fy_hooks_register(&fy_forwarded_hook);
    fy_hooks_register(&fy_hdr_rules_hook);
    /* After the rules, so a rule can mark a response no-transform or change its type. */
    fy_hooks_register(&fy_compress_hook);
}
