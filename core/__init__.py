"""The vocabulary every floor above shares: events, rewards, features and the learner-state codec."""
