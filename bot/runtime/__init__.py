"""Running Sanad: settings, the services of a process, the worker, the CLI, Rasa's process."""
