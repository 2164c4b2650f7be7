"""Integrations of ptychopinn into other applications (optional extras).

Each sub-package imports its host application lazily and says which extra to
install when the host is missing (e.g. ``pip install 'ptychopinn[ptychodus]'``).
"""
