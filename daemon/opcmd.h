/* opcmd: the operator commands of SPEC 1 (status, plan, resync, pause, resume). Short-lived
 * command-line tools, not the daemon loop: they may block, but every wait is bounded
 * (connect_timeout_seconds for connections, postgres_timeout_seconds / request_timeout_seconds
 * for statements and queries). They read and write the state and chunk tables in
 * destination_schema (plan also reads Druid's sys.segments); a running daemon picks their
 * effect up at the start of its next cycle (sinks/pgctl.h). */
#ifndef DSYNC_OPCMD_H
#define DSYNC_OPCMD_H

#include <stdbool.h>

/* Is word one of the operator commands? */
bool opcmd_is_command(const char *word);
/* Runs the command; argv[0] is the command word. Returns the exit code: 0 done, 1 failed,
 * 64 usage, 78 configuration. */
int opcmd_main(int argc, char **argv);

#endif
