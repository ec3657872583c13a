"""Explanations that can be checked: attribution maps, their technical validation, and a clinical review gallery."""
