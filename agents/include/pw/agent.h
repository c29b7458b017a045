/* agent.h — the node agent: one libuv loop that owns the topology, the VMM driver, the VM
 * inventory and the NNG req link to the scheduler (see docs/agent.md). */
#ifndef PW_AGENT_H
#define PW_AGENT_H

#include "pw/agent_config.h"

#include <stddef.h>

#ifndef PW_VERSION_STRING
#define PW_VERSION_STRING "0.0.0"
#endif

struct pw_agent;

/* pw_agent_new reads the topology, starts the driver, opens the NNG socket and starts a
 * non-blocking dial (retried in the background until the scheduler answers) and sets up a
 * private libuv loop. cfg is copied. Returns NULL with a one-line
 * reason in errbuf on failure. The caller owns the agent and releases it with pw_agent_free.
 * Any thread, but the agent is then used from one thread (the one calling pw_agent_run). */
struct pw_agent *pw_agent_new(const struct pw_agent_config *cfg, char *errbuf, size_t errlen);

/* pw_agent_run dials the scheduler and runs the loop until the agent is stopped (signal or
 * pw_agent_stop); then it destroys every VM, closes the link and every handle. With
 * cfg->handle_signals, SIGINT and SIGTERM stop the agent and SIGUSR1 toggles draining. Call
 * once, from the thread that is to own the VMs' processes (a driver may fork children that die
 * with this thread: PR_SET_PDEATHSIG). Returns PW_OK, or an error when the link could not
 * start. */
int pw_agent_run(struct pw_agent *a);

/* pw_agent_stop asks a running agent to stop. Any thread, any time before pw_agent_free; a
 * stop requested before pw_agent_run makes run return at once. */
void pw_agent_stop(struct pw_agent *a);

/* pw_agent_set_draining sets (1) or clears (0) draining, as SIGUSR1 toggles it: hello and
 * every report carry the value, and a change cuts the held report short so the scheduler
 * learns it at once. Any thread, any time before pw_agent_free; applied on the agent's loop
 * (ignored once the agent is stopping). */
void pw_agent_set_draining(struct pw_agent *a, int draining);

/* pw_agent_free releases an agent that is not running (never ran, or run returned). */
void pw_agent_free(struct pw_agent *a);

#endif
