"""A minimal Django project serving django-eventstream, set up as its README says.

Only the benchmark's own virtualenv (bench/.venv-peer) has django-eventstream installed.
"""
