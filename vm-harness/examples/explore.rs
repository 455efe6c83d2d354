use disklock_vm_harness::Rig;
fn main() -> disklock_vm_harness::Result<()> {
    let rig = Rig::builder()
        .name("explore")
        .luns(3)
        .hosts(2)
        .lun_paths(1, 2)
        .udev(true)
        .nvme("DLNVME01", 64)
        .virtio_disk(None, 16)
        .disklock("target/debug/disklock")
        .start()?;
    let a = rig.host(0);
    for s in std::env::args().skip(1) {
        let o = a.run(&s)?;
        println!("$ {s}\nrc={}\n{}{}", o.rc, o.stdout, o.stderr);
    }
    Ok(())
}
