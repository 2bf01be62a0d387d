//! The sealed-pool reader (`pool::persist::SealedFile::take`). Byte 0 = 0: the rest is the file,
//! with its host and key-check fields rebound to this machine and the fixed key when long enough
//! (so the seeds reach the generation check and the AEAD on any host). Byte 0 = 1: the rest is
//! the plaintext, sealed here under a valid header, so the segment table parser is reached.
//! Never panics; a file that is refused is moved aside, never left to be read twice; a file that
//! is taken is gone.
#![no_main]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use kirq::pool::persist::{PoolKey, SealedFile, host_id};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];
const HEADER: usize = 8 + 1 + 8 + 32 + 8 + 12;

fn check() -> [u8; 8] {
    let h = kirq::crypto::tagged_hash("kirq/pool-key-check/v1", &[&KEY]);
    h[..8].try_into().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = kirq_fuzz::scratch().join("pool");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pool.sealed");
    let file = if mode & 1 == 0 {
        let mut f = rest.to_vec();
        if f.len() >= 57 {
            f[17..49].copy_from_slice(&host_id());
            f[49..57].copy_from_slice(&check());
            f[9..17].copy_from_slice(&0u64.to_be_bytes());
        }
        f
    } else {
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(b"KIRQPOOL");
        header.push(1);
        header.extend_from_slice(&0u64.to_be_bytes());
        header.extend_from_slice(&host_id());
        header.extend_from_slice(&check());
        header.extend_from_slice(&[3; 12]);
        let ct = Aes256Gcm::new_from_slice(&KEY)
            .unwrap()
            .encrypt(
                &Nonce::from([3u8; 12]),
                Payload {
                    msg: rest,
                    aad: &header,
                },
            )
            .unwrap();
        [header, ct].concat()
    };
    std::fs::write(&path, &file).unwrap();
    let sealed = SealedFile::new(path.clone());
    match sealed.take(&PoolKey::from_bytes(KEY)) {
        Ok(Some(u)) => {
            assert!(!path.exists(), "a taken file must be gone");
            assert!(u.len() <= file.len());
            // Its generation is spent: a copy is refused.
            std::fs::write(&path, &file).unwrap();
            assert!(sealed.take(&PoolKey::from_bytes(KEY)).is_err());
        }
        Ok(None) => unreachable!("the file exists"),
        Err(e) => {
            if !e.is_recoverable() {
                let _ = e.to_string();
            }
        }
    }
});
