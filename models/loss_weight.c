/* loss_weight.c: the weight of each step's loss in a sequence's loss L
 * (loss_weight.h). */
#include "loss_weight.h"

double bt_loss_weight_of(const bt_sequence *seq, long s)
{
    return seq->loss_weight ? (double)seq->loss_weight[s] : 1.0;
}

double bt_loss_weight_scale(const bt_sequence *seq)
{
    double total = 0;
    for (long s = 0; s < seq->T; s++)
        total += bt_loss_weight_of(seq, s);
    return total > 0 ? 1.0 / total : 0;
}
