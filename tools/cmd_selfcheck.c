/* cmd_selfcheck.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_selfcheck(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("selfcheck", "not available in this build yet");
}
