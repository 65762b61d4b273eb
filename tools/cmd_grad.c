/* cmd_grad.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_grad(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("grad", "not available in this build yet");
}
