//! The Date header: RFC 1123 date, always GMT (RFC 3261 §20.17):
//! `Sat, 15 Oct 2005 04:44:56 GMT`.

use super::{malformed, HeaderError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipDate {
    pub year: u16,
    /// 1..=12
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

const WKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

impl SipDate {
    pub fn parse(value: &str) -> Result<SipDate, HeaderError> {
        let bad = || malformed("Date", format!("not an RFC 1123 GMT date: {value:?}"));
        let v = value.trim();
        let (wkday, rest) = v.split_once(", ").ok_or_else(bad)?;
        let f: Vec<&str> = rest.split(' ').collect();
        let [day, month, year, time, zone] = f[..] else { return Err(bad()) };
        if !WKDAYS.contains(&wkday) || zone != "GMT" {
            return Err(bad());
        }
        let num = |s: &str, len: usize, max: u16| -> Result<u16, HeaderError> {
            let n: u16 = (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
                .ok_or_else(bad)?;
            if n > max {
                Err(bad())
            } else {
                Ok(n)
            }
        };
        let month = MONTHS.iter().position(|m| *m == month).ok_or_else(bad)? as u8 + 1;
        let t: Vec<&str> = time.split(':').collect();
        let [h, m, s] = t[..] else { return Err(bad()) };
        let day = num(day, 2, 31)? as u8;
        if day == 0 {
            return Err(bad());
        }
        Ok(SipDate {
            year: num(year, 4, 9999)?,
            month,
            day,
            hour: num(h, 2, 23)? as u8,
            minute: num(m, 2, 59)? as u8,
            second: num(s, 2, 60)? as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmt_only() {
        let d = SipDate::parse("Sat, 15 Oct 2005 04:44:56 GMT").unwrap();
        assert_eq!((d.year, d.month, d.day, d.hour, d.minute, d.second), (2005, 10, 15, 4, 44, 56));
        assert!(SipDate::parse("Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(SipDate::parse("Fri, 1 Jan 2010 16:00:00 GMT").is_err());
        assert!(SipDate::parse("Fri, 01 Foo 2010 16:00:00 GMT").is_err());
        assert!(SipDate::parse("Fri, 01 Jan 2010 24:00:00 GMT").is_err());
        assert!(SipDate::parse("").is_err());
    }
}
