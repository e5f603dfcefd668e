"""Speed comparisons (`make bench`) and the full-size runs behind the lessons' numbers (`make results`)."""
