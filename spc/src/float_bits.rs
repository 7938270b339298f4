//! Serde helpers that store floats as their bit patterns (`f64::to_bits`), so a snapshot restores
//! every running statistic exactly, NaN and signed zero included. Used by the chart state and the
//! snapshot; depends only on `output`.

pub(crate) mod bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

pub(crate) mod opt_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        x.map(f64::to_bits).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(f64::from_bits))
    }
}

pub(crate) mod vec_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(x.iter().map(|v| v.to_bits()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
    }
}

/// `Option<Limits>` with bit-exact floats.
pub(crate) mod opt_limits_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::output::Limits;

    #[derive(Serialize, Deserialize)]
    enum L {
        Variables(u64, u64, u64),
        Proportion(u64),
        Rate(u64),
    }

    pub fn serialize<S: Serializer>(x: &Option<Limits>, s: S) -> Result<S::Ok, S::Error> {
        x.map(|l| match l {
            Limits::Variables {
                centre,
                sigma_upper,
                sigma_lower,
            } => L::Variables(
                centre.to_bits(),
                sigma_upper.to_bits(),
                sigma_lower.to_bits(),
            ),
            Limits::Proportion { p_bar } => L::Proportion(p_bar.to_bits()),
            Limits::Rate { c_bar } => L::Rate(c_bar.to_bits()),
        })
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limits>, D::Error> {
        Ok(Option::<L>::deserialize(d)?.map(|l| match l {
            L::Variables(c, u, lo) => Limits::Variables {
                centre: f64::from_bits(c),
                sigma_upper: f64::from_bits(u),
                sigma_lower: f64::from_bits(lo),
            },
            L::Proportion(p) => Limits::Proportion {
                p_bar: f64::from_bits(p),
            },
            L::Rate(c) => Limits::Rate {
                c_bar: f64::from_bits(c),
            },
        }))
    }
}
