/* cmd_train.c: placeholder until the command lands; says so and fails. */
#include "cli.h"

int cmd_train(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("train", "not available in this build yet");
}
