/* cmd_gradcheck.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_gradcheck(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("gradcheck", "not available in this build yet");
}
