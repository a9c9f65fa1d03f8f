//! Basalt's container engine.
