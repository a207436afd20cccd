//! Integration tests as a user: the real API on port 0, real Temporal, a fresh database, real
//! S3 (s3s-fs) and SMTP (maildev), and a scripted LLM at the network boundary.

mod certificates;
mod checkout;
mod contract;
mod council;
mod durability;
mod intake;
mod lifecycle;
mod login_page;
mod monitors;
mod pipeline;
mod portal;
mod real_llm;
mod replay;
mod sandbox;
