/* cmd_demo.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_demo(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("demo", "not available in this build yet");
}
