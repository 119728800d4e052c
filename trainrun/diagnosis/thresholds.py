"""The numbers every finding is judged against, each with the reason for its value."""

# "over the last epochs": judge a trend on 3 epochs so one noisy epoch decides nothing
LAST_EPOCHS = 3
ACCURACY_Z = 2.0  # about 95% two-sided: accuracy gaps under 2 binomial standard errors are noise
LOSS_REL_TOL = 0.05  # no per-sample loss variance is stored; loss gaps under 5% are not reported
TIE_RATE_HIGH = 0.5  # most eval samples share their top score: the accuracy is mostly coin flips
CONSTANT_TIE_RATE = 0.99  # practically every sample tied: the output does not depend on the input
NOT_LEARNING_MARGIN = 0.05  # the best val loss must beat the constant predictor's by 5% to count
NOT_LEARNING_MIN_EPOCHS = 3  # give a run 3 epochs before calling it stuck
OVERFIT_RISE = 0.05  # val loss 5% above its minimum is a rise, not jitter
OVERFIT_PATIENCE = 2  # the minimum must lie 2+ epochs back, as early stopping would wait
PENALTY_RATIO = 1.0  # penalty above the data term: the optimiser mostly shrinks weights
TIMING_SHARE = 0.5  # the running-average estimate must cover half the train-mode gap to be named
