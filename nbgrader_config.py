"""nbgrader's course configuration: the repository root is the course directory.

solutions/<assignment>/   nbgrader's *source* (master copies with solutions and hidden tests)
assignments/<assignment>/ nbgrader's *release*, made by `make release`, never edited by hand
"""

c = get_config()  # noqa: F821  (nbgrader injects get_config)

c.CourseDirectory.course_id = "robust-ml"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

# What replaces a solution region in the release: the student's copy fails until edited.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Feedback shows each test cell and its score, but not the code of hidden tests
# (nor tracebacks that would quote it), so hidden tests can be used again next year.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "course_lib.grading.feedback.HideHiddenTestTracebacks",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
