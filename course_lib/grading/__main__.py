"""``python -m course_lib.grading``: autograde a class (see :mod:`course_lib.grading.pipeline`)."""

from course_lib.grading.pipeline import main

if __name__ == "__main__":
    raise SystemExit(main())
