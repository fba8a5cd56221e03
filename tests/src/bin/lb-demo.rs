//! `lb-demo`: placeholder for the interactive lab demo.
fn main() {}
