//! Integer-only int8 inference (in progress).
