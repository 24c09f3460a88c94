"""Custom operators: the selective scan and its backends."""
