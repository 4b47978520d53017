"""Scripts run by tests/test_nlu_rasa_side.py inside the Rasa environment (.venv-rasa), from nlu/."""
