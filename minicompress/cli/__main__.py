"""`python -m minicompress.cli ...`, the same as the `minicompress` command."""
import sys

from .main import main

sys.exit(main())
