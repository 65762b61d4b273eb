/* cmd_plugins.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_plugins(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("plugins", "not available in this build yet");
}
