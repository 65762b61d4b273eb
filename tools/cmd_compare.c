/* cmd_compare.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_compare(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("compare", "not available in this build yet");
}
