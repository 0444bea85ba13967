/* See builtin.h. */
#include "filters/builtin.h"

#include "filters/compress.h"
#include "filters/forwarded.h"
#include "filters/hdr_rules.h"
#include "filters/lua_hook.h"

void fy_filters_register_builtin(void)
{
    fy_hooks_register(&fy_forwarded_hook);
    fy_hooks_register(&fy_hdr_rules_hook);
    /* After the rules, so a script sees (and may change) what they made. */
    fy_hooks_register(&fy_lua_hook);
    /* After the rules and the script, so a rule can mark a response no-transform or change its
     * type, and a body the script had decoded and encoded again is not encoded twice. */
    fy_hooks_register(&fy_compress_hook);
}
