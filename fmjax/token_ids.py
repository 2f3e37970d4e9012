"""Token ids that data and models agree on; here so that neither imports the other."""

# Token arrays (model inputs and targets) mark padding with this id; models mask it out.
PAD_ID = -1
