//! Trace files: pcap and pcapng reading (auto-detected) and writing.
