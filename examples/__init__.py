"""Research models written as a user would, outside the library, trained by its runner."""
