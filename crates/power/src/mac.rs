//! Ethernet MAC addresses as PXE file names and DHCP leases spell them.

use std::fmt;

use serde::{Serialize, Serializer};

/// A 48-bit Ethernet address. Displays as `52:54:00:a0:00:01` (lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// The PXELINUX per-host file name: `01-` (ARP type Ethernet) then the address, lower case,
    /// dash separated.
    pub fn pxelinux_file_name(&self) -> String {
        let bytes: Vec<String> = self.0.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("01-{}", bytes.join("-"))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::str::FromStr for MacAddress {
    type Err = String;

    /// Accepts `:` or `-` separated pairs (any case) and dhcpd's unpadded `52:54:0:a0:0:1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.trim().split([':', '-']).collect();
        let invalid = || format!("{text:?} is not a MAC address (six hexadecimal pairs like 52:54:00:a0:00:01)");
        if parts.len() != 6 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 6];
        for (byte, part) in bytes.iter_mut().zip(&parts) {
            if part.is_empty() || part.len() > 2 {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        Ok(MacAddress(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_in_the_usual_spellings() {
        let mac: MacAddress = "52:54:00:A0:00:01".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:a0:00:01");
        assert_eq!("52-54-00-a0-00-01".parse::<MacAddress>().unwrap(), mac);
        assert_eq!("52:54:0:a0:0:1".parse::<MacAddress>().unwrap(), mac);
        assert_eq!(mac.pxelinux_file_name(), "01-52-54-00-a0-00-01");
        for bad in ["", "52:54:00:a0:00", "52:54:00:a0:00:01:02", "zz:54:00:a0:00:01", "525:4:00:a0:00:01"] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad}");
        }
    }
}
