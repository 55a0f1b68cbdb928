//! One block of samples as a Parquet file in the platform's recorder schema (pandas and
//! pyarrow write it so): a naive nanosecond timestamp index `__index_level_0__` from
//! `ts_origin`, `sequence` as int64, and per signal `signal{i}` (float64, int64 or bool) or
//! `signal{i}.real` / `signal{i}.imag` (float64) for a complex value. Zstd, as the platform.
//!
//! Reading a file back yields exactly the samples the digest was computed over: float32
//! phasors widen to float64 and narrow back without loss. A file is read only when its schema
//! is exactly the contract's: `sequence`, then `signal0`, `signal1`, … (or the `.real`, `.imag`
//! pair of a complex signal) in order with their types, then the index, and nothing else. Values
//! are read by that position, so a file whose columns were renamed or reordered is refused,
//! not read as another signal (a reader by name would get frequency where it expects voltage).

use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical, ZstdLevel};
use parquet::data_type::{BoolType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::Type;

use edgeward_measurement::sample::{Sample, Timestamp, Value};

#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("a block needs at least one sample")]
    Empty,
    #[error("sample {index} has another signal layout than the first")]
    Layout { index: usize },
    #[error("sample time {0:?} does not fit a nanosecond timestamp")]
    Time(Timestamp),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("column {column}: {reason}")]
    Column { column: String, reason: String },
    #[error("the file's schema is not the block contract's: {0}")]
    Schema(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Bool,
    Complex,
}

fn kind(value: &Value) -> Kind {
    match value {
        Value::Float(_) => Kind::Float,
        Value::Int(_) => Kind::Int,
        Value::Bool(_) => Kind::Bool,
        Value::Complex { .. } => Kind::Complex,
    }
}

fn column(name: &str, physical: Physical) -> Result<Arc<Type>, ParquetError> {
    Ok(Arc::new(
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::REQUIRED)
            .build()?,
    ))
}

/// Encodes a block (all samples with the first one's layout) as a Parquet file.
pub fn encode_block(samples: &[Sample]) -> Result<Vec<u8>, ParquetError> {
    let first = samples.first().ok_or(ParquetError::Empty)?;
    let layout: Vec<Kind> = first.values.iter().map(kind).collect();
    for (index, sample) in samples.iter().enumerate() {
        if sample.values.len() != layout.len()
            || sample.values.iter().map(kind).ne(layout.iter().copied())
        {
            return Err(ParquetError::Layout { index });
        }
    }
    // Column order and metadata as pandas writes them: the columns, then the index.
    let mut fields = vec![column("sequence", Physical::INT64)?];
    let mut described = vec![("sequence".to_owned(), "int64")];
    for (index, kind) in layout.iter().enumerate() {
        match kind {
            Kind::Float => {
                fields.push(column(&format!("signal{index}"), Physical::DOUBLE)?);
                described.push((format!("signal{index}"), "float64"));
            }
            Kind::Int => {
                fields.push(column(&format!("signal{index}"), Physical::INT64)?);
                described.push((format!("signal{index}"), "int64"));
            }
            Kind::Bool => {
                fields.push(column(&format!("signal{index}"), Physical::BOOLEAN)?);
                described.push((format!("signal{index}"), "bool"));
            }
            Kind::Complex => {
                for part in ["real", "imag"] {
                    fields.push(column(&format!("signal{index}.{part}"), Physical::DOUBLE)?);
                    described.push((format!("signal{index}.{part}"), "float64"));
                }
            }
        }
    }
    fields.push(Arc::new(
        Type::primitive_type_builder("__index_level_0__", Physical::INT64)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::Timestamp {
                is_adjusted_to_u_t_c: false,
                unit: TimeUnit::NANOS,
            }))
            .build()?,
    ));
    let schema = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?,
    );
    let mut columns_metadata: Vec<serde_json::Value> = described
        .iter()
        .map(|(name, kind)| {
            serde_json::json!({"name": name, "field_name": name, "pandas_type": kind,
                               "numpy_type": kind, "metadata": null})
        })
        .collect();
    columns_metadata.push(
        serde_json::json!({"name": null, "field_name": "__index_level_0__",
        "pandas_type": "datetime", "numpy_type": "datetime64[ns]", "metadata": null}),
    );
    let pandas = serde_json::json!({
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": columns_metadata,
        "attributes": {},
        "creator": {"library": "edgeward", "version": env!("CARGO_PKG_VERSION")},
        "pandas_version": "2.0.0",
    });
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "pandas".to_owned(),
            pandas.to_string(),
        )]))
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties))?;
    let mut group = writer.next_row_group()?;
    let times = samples
        .iter()
        .map(|sample| {
            i64::try_from(sample.ts_origin.as_nanos())
                .map_err(|_| ParquetError::Time(sample.ts_origin))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sequences: Vec<i64> = samples
        .iter()
        .map(|sample| sample.sequence as i64)
        .collect();
    let mut columns: Vec<ColumnData> = vec![ColumnData::Int(sequences)];
    for (index, kind) in layout.iter().enumerate() {
        let values = samples.iter().map(|sample| sample.values[index]);
        match kind {
            Kind::Float => columns.push(ColumnData::Double(
                values
                    .map(|value| {
                        if let Value::Float(v) = value {
                            v
                        } else {
                            f64::NAN
                        }
                    })
                    .collect(),
            )),
            Kind::Int => columns.push(ColumnData::Int(
                values
                    .map(|value| if let Value::Int(v) = value { v } else { 0 })
                    .collect(),
            )),
            Kind::Bool => columns.push(ColumnData::Bool(
                values
                    .map(|value| matches!(value, Value::Bool(true)))
                    .collect(),
            )),
            Kind::Complex => {
                let pairs: Vec<(f64, f64)> = values
                    .map(|value| match value {
                        Value::Complex { re, im } => (f64::from(re), f64::from(im)),
                        _ => (f64::NAN, f64::NAN),
                    })
                    .collect();
                columns.push(ColumnData::Double(
                    pairs.iter().map(|pair| pair.0).collect(),
                ));
                columns.push(ColumnData::Double(
                    pairs.iter().map(|pair| pair.1).collect(),
                ));
            }
        }
    }
    columns.push(ColumnData::Int(times));
    let mut columns = columns.into_iter();
    while let Some(mut writer) = group.next_column()? {
        match columns.next() {
            Some(ColumnData::Int(values)) => {
                writer
                    .typed::<Int64Type>()
                    .write_batch(&values, None, None)?;
            }
            Some(ColumnData::Double(values)) => {
                writer
                    .typed::<DoubleType>()
                    .write_batch(&values, None, None)?;
            }
            Some(ColumnData::Bool(values)) => {
                writer
                    .typed::<BoolType>()
                    .write_batch(&values, None, None)?;
            }
            None => {
                return Err(ParquetError::Column {
                    column: "?".into(),
                    reason: "the schema has more columns than data".into(),
                })
            }
        }
        writer.close()?;
    }
    group.close()?;
    Ok(writer.into_inner()?)
}

enum ColumnData {
    Int(Vec<i64>),
    Double(Vec<f64>),
    Bool(Vec<bool>),
}

/// Checks the footer's Thrift before the parquet crate reads it: that crate reserves memory for
/// every list by the length the file claims (`Vec::with_capacity`), so a crafted file of a few
/// bytes could ask for gigabytes and abort the process. A list of n elements takes at least n
/// bytes in the compact protocol, so any claim beyond what is left is refused here.
fn check_footer(bytes: &[u8]) -> Result<(), ParquetError> {
    let malformed = |reason: &str| ParquetError::Column {
        column: "footer".into(),
        reason: reason.into(),
    };
    let length = bytes.len();
    if length < 12 || &bytes[length - 4..] != b"PAR1" || &bytes[..4] != b"PAR1" {
        return Err(malformed("not a Parquet file"));
    }
    let declared = u32::from_le_bytes([
        bytes[length - 8],
        bytes[length - 7],
        bytes[length - 6],
        bytes[length - 5],
    ]) as usize;
    let start = (length - 8)
        .checked_sub(declared)
        .filter(|start| *start >= 4)
        .ok_or_else(|| malformed("the footer is longer than the file"))?;
    let mut thrift = Thrift {
        bytes: &bytes[start..length - 8],
        at: 0,
    };
    thrift
        .skip(12, 0)
        .map_err(|reason| malformed(&format!("footer: {reason}")))
}

/// A bounds-checking walk over Thrift compact-protocol values.
struct Thrift<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Thrift<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let byte = *self.bytes.get(self.at).ok_or("cut short")?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 64 bits")
    }

    fn advance(&mut self, count: u64) -> Result<(), &'static str> {
        let left = (self.bytes.len() - self.at) as u64;
        if count > left {
            return Err("a length beyond the footer");
        }
        self.at += count as usize;
        Ok(())
    }

    /// A container of `count` elements: each takes at least a byte.
    fn elements(&mut self, count: u64, kind: u8, depth: u32) -> Result<(), &'static str> {
        if count > (self.bytes.len() - self.at) as u64 {
            return Err("a list longer than the footer");
        }
        for _ in 0..count {
            match kind {
                1 | 2 => self.advance(1)?,
                _ => self.skip(kind, depth + 1)?,
            }
        }
        Ok(())
    }

    fn skip(&mut self, kind: u8, depth: u32) -> Result<(), &'static str> {
        if depth > 32 {
            return Err("nested too deeply");
        }
        match kind {
            1 | 2 => Ok(()),
            3 => self.advance(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.advance(8),
            8 => {
                let length = self.varint()?;
                self.advance(length)
            }
            9 | 10 => {
                let header = self.byte()?;
                let count = match header >> 4 {
                    15 => self.varint()?,
                    short => u64::from(short),
                };
                self.elements(count, header & 0x0F, depth)
            }
            11 => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                let kinds = self.byte()?;
                if count > (self.bytes.len() - self.at) as u64 {
                    return Err("a map longer than the footer");
                }
                for _ in 0..count {
                    self.skip(kinds >> 4, depth + 1)?;
                    self.skip(kinds & 0x0F, depth + 1)?;
                }
                Ok(())
            }
            12 => loop {
                let header = self.byte()?;
                if header == 0 {
                    return Ok(());
                }
                if header >> 4 == 0 {
                    self.varint()?;
                }
                self.skip(header & 0x0F, depth + 1)?;
            },
            _ => Err("an unknown Thrift type"),
        }
    }
}

/// The signal columns' layout a schema gives, when it is exactly the contract's: `sequence`
/// (int64), the signals in order (`signal{i}` float64, int64 or bool; `signal{i}.real` and
/// `signal{i}.imag` float64 for a complex one), `__index_level_0__` (int64 nanosecond timestamp,
/// not UTC-adjusted), each required or optional (pandas writes optional columns), nothing
/// nested, nothing else.
fn contract_layout(
    schema: &parquet::schema::types::SchemaDescriptor,
) -> Result<Vec<Kind>, ParquetError> {
    let refuse = |reason: String| ParquetError::Schema(reason);
    let fields = schema.root_schema().get_fields();
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields {
        if !field.is_primitive() {
            return Err(refuse(format!("{:?} is a group", field.name())));
        }
        let info = field.get_basic_info();
        if info.repetition() == Repetition::REPEATED {
            return Err(refuse(format!("{:?} is repeated", field.name())));
        }
        columns.push((
            field.name(),
            field.get_physical_type(),
            info.logical_type_ref().cloned(),
        ));
    }
    let integer = |logical: &Option<LogicalType>| {
        matches!(
            logical,
            None | Some(LogicalType::Integer {
                bit_width: 64,
                is_signed: true
            })
        )
    };
    let Some(((first, first_type, first_logical), rest)) = columns.split_first() else {
        return Err(refuse("it has no columns".into()));
    };
    if *first != "sequence" || *first_type != Physical::INT64 || !integer(first_logical) {
        return Err(refuse(format!(
            "the first column is {first:?} ({first_type}), not sequence (int64)"
        )));
    }
    let Some(((last, last_type, last_logical), signals)) = rest.split_last() else {
        return Err(refuse("it has no index column".into()));
    };
    let nanos = matches!(
        last_logical,
        Some(LogicalType::Timestamp {
            is_adjusted_to_u_t_c: false,
            unit: TimeUnit::NANOS
        })
    );
    if *last != "__index_level_0__" || *last_type != Physical::INT64 || !nanos {
        return Err(refuse(format!(
            "the last column is {last:?} ({last_type}, {last_logical:?}), not __index_level_0__ \
             (nanosecond timestamp)"
        )));
    }
    let mut layout = Vec::new();
    let mut position = 0;
    while position < signals.len() {
        let index = layout.len();
        let (name, physical, logical) = &signals[position];
        let plain = format!("signal{index}");
        let real = format!("signal{index}.real");
        let imag = format!("signal{index}.imag");
        let kind = if *name == plain {
            match physical {
                Physical::DOUBLE if logical.is_none() => Kind::Float,
                Physical::INT64 if integer(logical) => Kind::Int,
                Physical::BOOLEAN if logical.is_none() => Kind::Bool,
                other => {
                    return Err(refuse(format!(
                        "{name} is {other}, not float64, int64 or bool"
                    )))
                }
            }
        } else if *name == real {
            let imaginary = signals.get(position + 1);
            let both_double = *physical == Physical::DOUBLE
                && logical.is_none()
                && imaginary.is_some_and(|(name, physical, logical)| {
                    *name == imag && *physical == Physical::DOUBLE && logical.is_none()
                });
            if !both_double {
                return Err(refuse(format!(
                    "{real} is not followed by {imag}, both float64"
                )));
            }
            position += 1;
            Kind::Complex
        } else {
            return Err(refuse(format!(
                "column {} is {name:?} where signal {index} ({plain}, or {real} and {imag}) \
                 belongs",
                position + 2
            )));
        };
        layout.push(kind);
        position += 1;
    }
    Ok(layout)
}

/// Reads a block file back into samples (the platform's layout: index, sequence, signals),
/// refusing any file whose schema is not exactly the contract's.
pub fn decode_block(bytes: Vec<u8>) -> Result<Vec<Sample>, ParquetError> {
    check_footer(&bytes)?;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))?;
    let layout = contract_layout(reader.metadata().file_metadata().schema_descr())?;
    let bad = |column: &str, reason: &str| ParquetError::Column {
        column: column.to_owned(),
        reason: reason.to_owned(),
    };
    let mut samples = Vec::new();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        // The schema was checked: the fields come in the contract's order.
        let mut fields = row
            .get_column_iter()
            .map(|(name, field)| (name.as_str(), field));
        let sequence = match fields.next() {
            Some((_, Field::Long(value))) => *value as u64,
            Some((name, _)) => return Err(bad(name, "not an int64 value")),
            None => return Err(bad("sequence", "missing")),
        };
        let mut values = Vec::with_capacity(layout.len());
        for kind in &layout {
            let value = match (kind, fields.next()) {
                (Kind::Float, Some((_, Field::Double(value)))) => Value::Float(*value),
                (Kind::Int, Some((_, Field::Long(value)))) => Value::Int(*value),
                (Kind::Bool, Some((_, Field::Bool(value)))) => Value::Bool(*value),
                (Kind::Complex, Some((_, Field::Double(re)))) => match fields.next() {
                    Some((_, Field::Double(im))) => Value::Complex {
                        re: *re as f32,
                        im: *im as f32,
                    },
                    Some((name, _)) => return Err(bad(name, "not a float64 value")),
                    None => return Err(bad("signal", "an imaginary part is missing")),
                },
                (_, Some((name, _))) => {
                    return Err(bad(name, "a missing value or one of another type"))
                }
                (_, None) => return Err(bad("signal", "missing")),
            };
            values.push(value);
        }
        let ts_origin = match fields.next() {
            Some((_, Field::Long(nanos))) if *nanos >= 0 => {
                let nanos = *nanos as u64;
                Timestamp::new(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
            }
            Some((name, _)) => return Err(bad(name, "not a nanosecond timestamp")),
            None => None,
        }
        .ok_or_else(|| bad("__index_level_0__", "missing"))?;
        samples.push(Sample {
            ts_origin,
            sequence,
            values,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reads_back_to_the_same_samples() {
        let samples: Vec<Sample> = (0..5u64)
            .map(|index| Sample {
                ts_origin: Timestamp::new(1_700_000_000 + index, 20_000_000).expect("valid"),
                sequence: 100 + index,
                values: vec![
                    Value::Complex {
                        re: 230.1 + index as f32,
                        im: -1.25,
                    },
                    Value::Float(50.0 + index as f64 / 100.0),
                    Value::Int(-3),
                    Value::Bool(index % 2 == 0),
                ],
            })
            .collect();
        let bytes = encode_block(&samples).expect("encodes");
        assert_eq!(decode_block(bytes).expect("decodes"), samples);
        let mut mixed = samples.clone();
        mixed[3].values.pop();
        assert!(matches!(
            encode_block(&mixed),
            Err(ParquetError::Layout { index: 3 })
        ));
        assert!(matches!(encode_block(&[]), Err(ParquetError::Empty)));
        assert!(decode_block(b"not parquet".to_vec()).is_err());
    }

    #[test]
    fn a_footer_claiming_more_than_it_holds_is_refused_before_anything_is_reserved() {
        // Found by the parquet_block fuzz target: 110 bytes whose footer claims a list that the
        // parquet crate would reserve gigabytes for.
        let hex = "0000000000d5d5d5d5d5d5d5d5d5d5d5d5d52c2c2c2c2cfcd5d5ff14fdf96c6c6c6c6c6c6c6c6c6cd5d5d5d5d54dd5010000005041525031410052522dffffffffffffffffffffffffffffffffffffffffffffff31d5d5d53dd5d5d5d5d54d010000005041525000000050415231";
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        assert!(matches!(
            decode_block(bytes),
            Err(ParquetError::Column { column, .. }) if column == "footer"
        ));
    }

    /// A column of a test file: name, type, and one value per row (`None`: null).
    type TestColumn<'a> = (&'a str, Physical, Option<LogicalType>, Vec<Option<f64>>);

    /// A Parquet file with exactly these columns.
    fn file_with(columns: &[TestColumn<'_>]) -> Vec<u8> {
        let fields: Vec<Arc<Type>> = columns
            .iter()
            .map(|(name, physical, logical, values)| {
                let repetition = if values.iter().any(Option::is_none) {
                    Repetition::OPTIONAL
                } else {
                    Repetition::REQUIRED
                };
                Arc::new(
                    Type::primitive_type_builder(name, *physical)
                        .with_repetition(repetition)
                        .with_logical_type(logical.clone())
                        .build()
                        .expect("column"),
                )
            })
            .collect();
        let schema = Arc::new(
            Type::group_type_builder("schema")
                .with_fields(fields)
                .build()
                .expect("schema"),
        );
        let mut writer =
            SerializedFileWriter::new(Vec::new(), schema, Arc::new(WriterProperties::default()))
                .expect("writer");
        let mut group = writer.next_row_group().expect("row group");
        let mut columns = columns.iter();
        while let Some(mut column) = group.next_column().expect("column") {
            let (_, physical, _, values) = columns.next().expect("data");
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            let levels: Vec<i16> = values
                .iter()
                .map(|value| i16::from(value.is_some()))
                .collect();
            let levels = values
                .iter()
                .any(Option::is_none)
                .then_some(levels.as_slice());
            match physical {
                Physical::DOUBLE => {
                    column
                        .typed::<DoubleType>()
                        .write_batch(&present, levels, None)
                        .expect("write");
                }
                _ => {
                    let present: Vec<i64> = present.iter().map(|value| *value as i64).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&present, levels, None)
                        .expect("write");
                }
            }
            column.close().expect("close");
        }
        group.close().expect("close");
        writer.into_inner().expect("bytes")
    }

    #[test]
    fn only_the_contracts_schema_is_read() {
        let nanos = Some(LogicalType::Timestamp {
            is_adjusted_to_u_t_c: false,
            unit: TimeUnit::NANOS,
        });
        let column = |name: &'static str, physical, logical: Option<LogicalType>, value: f64| {
            (
                name,
                physical,
                logical,
                vec![Some(value), Some(value + 1.0)],
            )
        };
        let sequence = column("sequence", Physical::INT64, None, 7.0);
        let index = column("__index_level_0__", Physical::INT64, nanos.clone(), 1.7e18);
        let real = column("signal0.real", Physical::DOUBLE, None, 230.0);
        let imag = column("signal0.imag", Physical::DOUBLE, None, -1.0);
        let frequency = column("signal1", Physical::DOUBLE, None, 50.0);
        let good = [
            sequence.clone(),
            real.clone(),
            imag.clone(),
            frequency.clone(),
            index.clone(),
        ];
        let samples = decode_block(file_with(&good)).expect("the contract's schema");
        assert_eq!(samples.len(), 2);
        assert_eq!(
            samples[0].values,
            vec![
                Value::Complex {
                    re: 230.0,
                    im: -1.0
                },
                Value::Float(50.0)
            ]
        );
        let refused = |columns: &[TestColumn<'_>]| match decode_block(file_with(columns)) {
            Err(ParquetError::Schema(reason)) => reason,
            other => panic!("read a file outside the contract: {other:?}"),
        };
        // Two names swapped, the values where they were: read by position the digest stays
        // valid, while a reader by name gets the frequency where it expects the voltage.
        let mut voltage = real.clone();
        voltage.0 = "signal1";
        let mut hertz = frequency.clone();
        hertz.0 = "signal0.real";
        let reason = refused(&[
            sequence.clone(),
            voltage,
            imag.clone(),
            hertz,
            index.clone(),
        ]);
        assert!(reason.contains("\"signal1\" where signal 0"), "{reason}");
        let reason = refused(&[
            sequence.clone(),
            frequency.clone(),
            real.clone(),
            imag.clone(),
            index.clone(),
        ]);
        assert!(reason.contains("where signal 0"), "{reason}");
        // Something extra, something missing, a wrong type.
        let extra = column("ts_received", Physical::INT64, None, 1.0);
        let reason = refused(&[
            sequence.clone(),
            real.clone(),
            imag.clone(),
            extra,
            index.clone(),
        ]);
        assert!(reason.contains("ts_received"), "{reason}");
        let reason = refused(&[sequence.clone(), real.clone(), imag.clone()]);
        assert!(reason.contains("not __index_level_0__"), "{reason}");
        let mut double_sequence = sequence.clone();
        double_sequence.1 = Physical::DOUBLE;
        let reason = refused(&[double_sequence, frequency.clone(), index.clone()]);
        assert!(reason.contains("not sequence (int64)"), "{reason}");
        let reason = refused(&[
            sequence.clone(),
            real.clone(),
            frequency.clone(),
            index.clone(),
        ]);
        assert!(reason.contains("not followed by signal0.imag"), "{reason}");
        let mut micros = index.clone();
        micros.2 = Some(LogicalType::Timestamp {
            is_adjusted_to_u_t_c: false,
            unit: TimeUnit::MICROS,
        });
        refused(&[sequence.clone(), frequency.clone(), micros]);
        // Optional columns (as pandas writes them) are read; a missing value is not.
        let mut with_null = frequency.clone();
        with_null.0 = "signal0";
        with_null.3 = vec![Some(50.0), None];
        let read = decode_block(file_with(&[sequence.clone(), with_null, index.clone()]));
        assert!(matches!(read, Err(ParquetError::Column { .. })), "{read:?}");
    }
}
