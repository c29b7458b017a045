/* driver.c — the registry of VMM drivers. A new driver adds its table here. */
#include "pw/driver.h"

#include <string.h>

static const struct pw_driver_ops *const drivers[] = {
    &pw_driver_qemu,
    &pw_driver_sim,
    NULL,
};

const struct pw_driver_ops *pw_driver_find(const char *name)
{
    for (size_t i = 0; drivers[i] != NULL; i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

const struct pw_driver_ops *const *pw_driver_list(void) { return drivers; }
