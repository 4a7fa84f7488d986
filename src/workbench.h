/* workbench.h: `hotsock test` and `hotsock record` (workbench.c). */
#ifndef HS_WORKBENCH_H
#define HS_WORKBENCH_H

/* Run the workbench subcommand argv[0] ("test" or "record") with its
 * arguments argv[1..argc-1]; returns the process exit code. */
int hs_workbench_main(int argc, char **argv);

#endif
