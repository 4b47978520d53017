"""Who the learner is: linking a chat to a learner of the platform."""
