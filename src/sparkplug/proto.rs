//! The Sparkplug B payload schema (`sparkplug_b.proto`, Sparkplug 3.0.0, section 6.4), written as Rust
//! structs for `prost` instead of generated from the `.proto` file: no `protoc` and no build script on
//! the gateway's toolchain. Field numbers and types follow the specification's schema one to one; the
//! schema is proto2, so scalar fields are `Option`s and repeated scalars are unpacked. `extensions`
//! ranges have no Rust counterpart: prost skips unknown fields when decoding, which is what a proto2
//! decoder does with extensions it does not know.

/// `Payload`: the top-level message of every Sparkplug B MQTT message (except STATE, which is JSON).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch (UTC) at which the message was published.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// 0-255, one more than the node's previous message (absent in NDEATH, NCMD, DCMD).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Included in births; omitted in DATA messages when aliases are used.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the Unix epoch (UTC) at which the value was acquired.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// A [`super::datatype::DataType`] value; required in births, omitted in DATA messages.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(message, optional, tag = "8")]
    pub metadata: Option<MetaData>,
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    #[prost(
        oneof = "metric::Value",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19"
    )]
    pub value: Option<metric::Value>,
}

pub mod metric {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// Int8/16/32 (two's complement in the low bits) and UInt8/16/32.
        #[prost(uint32, tag = "10")]
        IntValue(u32),
        /// Int64 (two's complement), UInt64 and DateTime.
        #[prost(uint64, tag = "11")]
        LongValue(u64),
        #[prost(float, tag = "12")]
        FloatValue(f32),
        #[prost(double, tag = "13")]
        DoubleValue(f64),
        #[prost(bool, tag = "14")]
        BooleanValue(bool),
        /// String, Text, UUID.
        #[prost(string, tag = "15")]
        StringValue(String),
        /// Bytes, File and the array types.
        #[prost(bytes = "vec", tag = "16")]
        BytesValue(Vec<u8>),
        #[prost(message, tag = "17")]
        DatasetValue(super::DataSet),
        #[prost(message, tag = "18")]
        TemplateValue(super::Template),
        #[prost(message, tag = "19")]
        ExtensionValue(super::Extension),
    }
}

/// The `*Extension` messages of the schema: nothing but an extension range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extension {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaData {
    #[prost(bool, optional, tag = "1")]
    pub is_multi_part: Option<bool>,
    #[prost(string, optional, tag = "2")]
    pub content_type: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub size: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "5")]
    pub file_name: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub file_type: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub md5: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub description: Option<String>,
}

/// A map as two parallel arrays of equal length.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    #[prost(oneof = "property_value::Value", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub value: Option<property_value::Value>,
}

pub mod property_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(uint32, tag = "3")]
        IntValue(u32),
        #[prost(uint64, tag = "4")]
        LongValue(u64),
        #[prost(float, tag = "5")]
        FloatValue(f32),
        #[prost(double, tag = "6")]
        DoubleValue(f64),
        #[prost(bool, tag = "7")]
        BooleanValue(bool),
        #[prost(string, tag = "8")]
        StringValue(String),
        #[prost(message, tag = "9")]
        PropertysetValue(super::PropertySet),
        #[prost(message, tag = "10")]
        PropertysetsValue(super::PropertySetList),
        #[prost(message, tag = "11")]
        ExtensionValue(super::Extension),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySetList {
    #[prost(message, repeated, tag = "1")]
    pub propertyset: Vec<PropertySet>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DataSet {
    #[prost(uint64, optional, tag = "1")]
    pub num_of_columns: Option<u64>,
    #[prost(string, repeated, tag = "2")]
    pub columns: Vec<String>,
    #[prost(uint32, repeated, packed = "false", tag = "3")]
    pub types: Vec<u32>,
    #[prost(message, repeated, tag = "4")]
    pub rows: Vec<data_set::Row>,
}

pub mod data_set {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Row {
        #[prost(message, repeated, tag = "1")]
        pub elements: Vec<DataSetValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DataSetValue {
        #[prost(oneof = "data_set_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<data_set_value::Value>,
    }

    pub mod data_set_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "1")]
            IntValue(u32),
            #[prost(uint64, tag = "2")]
            LongValue(u64),
            #[prost(float, tag = "3")]
            FloatValue(f32),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(bool, tag = "5")]
            BooleanValue(bool),
            #[prost(string, tag = "6")]
            StringValue(String),
            #[prost(message, tag = "7")]
            ExtensionValue(super::super::Extension),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Template {
    #[prost(string, optional, tag = "1")]
    pub version: Option<String>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(message, repeated, tag = "3")]
    pub parameters: Vec<template::Parameter>,
    #[prost(string, optional, tag = "4")]
    pub template_ref: Option<String>,
    #[prost(bool, optional, tag = "5")]
    pub is_definition: Option<bool>,
}

pub mod template {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(uint32, optional, tag = "2")]
        pub r#type: Option<u32>,
        #[prost(oneof = "parameter::Value", tags = "3, 4, 5, 6, 7, 8, 9")]
        pub value: Option<parameter::Value>,
    }

    pub mod parameter {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "3")]
            IntValue(u32),
            #[prost(uint64, tag = "4")]
            LongValue(u64),
            #[prost(float, tag = "5")]
            FloatValue(f32),
            #[prost(double, tag = "6")]
            DoubleValue(f64),
            #[prost(bool, tag = "7")]
            BooleanValue(bool),
            #[prost(string, tag = "8")]
            StringValue(String),
            #[prost(message, tag = "9")]
            ExtensionValue(super::super::Extension),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Bytes written by hand from the protobuf wire format for a DDATA-like payload, so the field
    /// numbers and wire types are checked against the schema, not against prost's own encoder.
    #[test]
    fn wire_format_matches_the_schema_field_numbers() {
        let p = Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                alias: Some(5),
                timestamp: Some(2),
                is_historical: Some(true),
                value: Some(metric::Value::LongValue(u64::MAX)),
                ..Default::default()
            }],
            seq: Some(7),
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        let metric: Vec<u8> = [
            &[0x10, 5][..], // field 2 (alias), varint
            &[0x18, 2],     // field 3 (timestamp), varint
            &[0x28, 1],     // field 5 (is_historical), varint
            &[0x58],        // field 11 (long_value), varint: u64::MAX is ten bytes
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ]
        .concat();
        let mut expected = vec![0x08, 1, 0x12, metric.len() as u8];
        expected.extend_from_slice(&metric);
        expected.extend_from_slice(&[0x18, 7]);
        assert_eq!(bytes, expected);
        assert_eq!(Payload::decode(&bytes[..]).unwrap(), p);
    }

    #[test]
    fn properties_and_strings_round_trip() {
        let p = Payload {
            timestamp: Some(1_700_000_000_000),
            metrics: vec![Metric {
                name: Some("Line/Temp".into()),
                datatype: Some(12),
                value: Some(metric::Value::StringValue("é ok".into())),
                properties: Some(PropertySet {
                    keys: vec!["Quality".into()],
                    values: vec![PropertyValue {
                        r#type: Some(3),
                        is_null: None,
                        value: Some(property_value::Value::IntValue(192)),
                    }],
                }),
                ..Default::default()
            }],
            seq: Some(0),
            ..Default::default()
        };
        assert_eq!(Payload::decode(&p.encode_to_vec()[..]).unwrap(), p);
    }
}
