/* cmd_generate.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("generate", "not available in this build yet");
}
