/* The hook registry; see hooks.h. The exchange functions live in session.c. */
#include "proxy/hooks.h"

#include "core/assert.h"

const struct fy_hook *fy_hooks[FY_MAX_HOOKS];
unsigned fy_nhooks;

int fy_hooks_register(const struct fy_hook *h)
{
    for (unsigned i = 0; i < fy_nhooks; i++)
        if (fy_hooks[i] == h)
            return 0; /* registering twice (a test, a second main) is harmless */
    if (fy_nhooks >= FY_MAX_HOOKS)
        return -1;
    fy_hooks[fy_nhooks++] = h;
    return 0;
}

unsigned fy_hook_index(const struct fy_hook *h)
{
    for (unsigned i = 0; i < fy_nhooks; i++)
        if (fy_hooks[i] == h)
            return i;
    FY_ASSERT(!"fy_hook_index: the hook is not registered");
    return 0;
}
