//! placeholder, see issue 6
