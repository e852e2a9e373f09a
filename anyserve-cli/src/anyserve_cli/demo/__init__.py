"""``anyserve demo``: a local cluster on embedded defaults and a guided tour of it."""
