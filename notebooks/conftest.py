"""pytest settings for ``pytest notebooks --nbval-lax``: run the solved notebooks only.

The student copies in ``student/`` stop at ``raise NotImplementedError`` in every exercise by design;
``tests/test_course.py`` checks them (current, free of solutions, runnable up to the first exercise).
"""

collect_ignore_glob = ["student/*"]
