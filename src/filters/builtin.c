/* See builtin.h. */
#include "filters/builtin.h"

#include "filters/forwarded.h"
#include "filters/hdr_rules.h"

void fy_filters_register_builtin(void)
{
    fy_hooks_register(&fy_forwarded_hook);
    fy_hooks_register(&fy_hdr_rules_hook);
}
