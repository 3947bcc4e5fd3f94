//! Redis only: what the shared suite (`store::suite`) cannot show.
