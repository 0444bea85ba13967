/* The filters every ferry runs, registered on the hook points (proxy/hooks.h). */
#ifndef FY_FILTERS_BUILTIN_H
#define FY_FILTERS_BUILTIN_H

/* Registers them in their order: forwarding fields first, then the header rules (so a rule can
 * override what ferry adds). Call once at startup, before any worker runs. */
void fy_filters_register_builtin(void);

#endif
