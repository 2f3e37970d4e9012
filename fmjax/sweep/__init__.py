"""`fmjax sweep`: hyper-parameter studies (grid, random, Bayesian) whose trials are fmjax runs."""
