"""Collection plans: who to record where, with which prompts, and how far each site has got."""
