/* cmd_analyze.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_analyze(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("analyze", "not available in this build yet");
}
