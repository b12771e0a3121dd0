# Kept as a literal so that importing the package never reads distribution metadata
# (a measurable cost at Lambda cold start).
__version__ = "0.1.0"
