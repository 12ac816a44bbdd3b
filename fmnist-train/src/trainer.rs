//! The step's report and start errors under their old path, and the tests of the one trainer
//! (`shared/trainer.rs`) on both networks.

pub use crate::lenet::train::{TrainState, trainable_ranges};
pub use crate::shared::step::*;

#[cfg(test)]
mod lenet_tests {
    use super::*;

    /// The trainer of LeNet-BN.
    type Trainer<'d> = crate::shared::trainer::Trainer<'d, crate::lenet::TrainLeNet>;
    use crate::lenet::TrainLeNet;
    use crate::lenet::kernels::init_params;
    use crate::shared::augment::Augment;
    use crate::shared::config::{Preset, Schedule, TrainConfig};
    use crate::shared::distill::Teacher;
    use crate::shared::weights::TrainedWeights;
    use crate::wide::TrainWide;
    use fmnist_core::lenet::LeNetParams;
    use fmnist_infer::data::Dataset;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Dataset {
            images: (0..n)
                .map(|_| std::array::from_fn(|_| rng.random::<u8>()))
                .collect(),
            labels: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
        }
    }

    fn recipe(steps: u64) -> TrainConfig {
        let mut c = Preset::Default.config_for(crate::shared::config::Model::Lenet, 200, 3);
        c.batch = 40;
        c.steps = steps;
        c.schedule = Schedule::Cosine {
            warmup_steps: 2,
            final_fraction: 0.0,
        };
        c.augment = Augment {
            shift: 2,
            flip: true,
            rotate_deg: 10.0,
            noise: 0.03,
            erase: 0.25,
        };
        c.label_smoothing = 0.1;
        *c.optimizer.decoupled_decay_mut() = 0.01;
        c
    }

    fn weights(t: &Trainer) -> Vec<u8> {
        bytemuck::bytes_of(t.params()).to_vec()
    }

    fn teachers() -> Teacher {
        Teacher::from_weights(vec![
            TrainedWeights::of::<TrainLeNet>(&init_params(11)),
            TrainedWeights::of::<TrainWide>(&crate::wide::kernels::init_wide_params(12)),
        ])
    }

    #[test]
    fn distilled_runs_stay_thread_independent_and_resume_bit_identically() {
        let data = synthetic(200, 1);
        for augment in [Augment::default(), recipe(1).augment] {
            let mut cfg = recipe(6);
            cfg.augment = augment;
            cfg.distill = Some(teachers().recipe(0.7, 3.0));
            let start = |threads: usize| {
                let mut t = Trainer::new(cfg, &data, threads).unwrap();
                t.set_teacher(teachers()).unwrap();
                t
            };
            let run = |threads: usize| {
                let mut t = start(threads);
                (0..6).for_each(|_| {
                    t.step();
                });
                weights(&t)
            };
            let one = run(1);
            assert!(one == run(2), "thread count changed the weights");
            let mut first = start(2);
            (0..4).for_each(|_| {
                first.step();
            });
            let mut resumed = Trainer::resume(first.state(), &data, 1).unwrap();
            resumed.set_teacher(teachers()).unwrap();
            (0..2).for_each(|_| {
                resumed.step();
            });
            assert!(weights(&resumed) == one, "resume changed the weights");

            // The teacher term is not ignored, and other teachers are refused.
            let mut plain = cfg;
            plain.distill = None;
            let mut t = Trainer::new(plain, &data, 2).unwrap();
            (0..6).for_each(|_| {
                t.step();
            });
            assert!(weights(&t) != one);
            let other =
                Teacher::from_weights(vec![TrainedWeights::of::<TrainLeNet>(&init_params(13))]);
            let why = Trainer::new(cfg, &data, 1)
                .unwrap()
                .set_teacher(other)
                .unwrap_err();
            assert!(why.contains("distils from 2 teacher model(s)"), "{why}");
        }
    }

    #[test]
    fn every_improvement_on_stays_thread_independent_and_resumes_bit_identically() {
        let data = synthetic(200, 1);
        let run = |threads: usize| {
            let mut t = Trainer::new(recipe(8), &data, threads).unwrap();
            (0..8).for_each(|_| {
                t.step();
            });
            weights(&t)
        };
        let one = run(1);
        assert!(one == run(3), "thread count changed the weights");

        let mut first = Trainer::new(recipe(8), &data, 2).unwrap();
        (0..5).for_each(|_| {
            first.step();
        });
        let mut resumed = Trainer::resume(first.state(), &data, 1).unwrap();
        (0..3).for_each(|_| {
            resumed.step();
        });
        assert!(resumed.steps_done() == 8 && weights(&resumed) == one);

        // And augmentation changes what is learned (the flags are not ignored).
        let mut plain = recipe(8);
        plain.augment = Augment::default();
        let mut t = Trainer::new(plain, &data, 2).unwrap();
        (0..8).for_each(|_| {
            t.step();
        });
        assert!(weights(&t) != one);
    }

    #[test]
    fn decoupled_decay_shrinks_each_weight_by_lr_times_lambda() {
        let data = synthetic(64, 2);
        let mut cfg = recipe(1);
        cfg.augment = Augment::default();
        cfg.schedule = Schedule::Constant;
        cfg.batch = 64;
        let lambda = 0.05;
        let w0 = init_params(cfg.seed);
        *cfg.optimizer.decoupled_decay_mut() = 0.0;
        let mut plain = Trainer::new(cfg, &data, 1).unwrap();
        *cfg.optimizer.decoupled_decay_mut() = lambda;
        let mut decayed = Trainer::new(cfg, &data, 1).unwrap();
        let lr = plain.step().lr;
        decayed.step();
        let f = |p: &LeNetParams| {
            bytemuck::cast_slice::<LeNetParams, f32>(std::slice::from_ref(p)).to_vec()
        };
        let (a, b, w) = (f(plain.params()), f(decayed.params()), f(&w0));
        let mut checked = 0;
        for r in trainable_ranges() {
            for i in r {
                let expect = a[i] - lr * lambda * w[i];
                assert!(
                    (b[i] - expect).abs() <= 1e-6 * (1.0 + expect.abs()),
                    "parameter {i}: {} vs {expect}",
                    b[i]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, fmnist_core::lenet::LENET_PARAMETERS);
        // Running statistics are not parameters: untouched by the decay.
        assert_eq!(
            plain.params().bn1.running_var,
            decayed.params().bn1.running_var
        );
    }
}

#[cfg(test)]
mod wide_tests {
    use crate::checkpoint::{decode_run, encode_run};
    use crate::lenet::TrainLeNet;
    use crate::shared::augment::Augment;
    use crate::shared::config::{AdamConfig, Conv, Model, Optimizer, Schedule, TrainConfig};
    use crate::shared::distill::Teacher;
    use crate::shared::net::{RunState, TrainNet};
    use crate::shared::optim::Moments;
    use crate::shared::trainer::Trainer;
    use crate::shared::weights::TrainedWeights;
    use crate::wide::TrainWide;
    use crate::wide::train::WideState;
    use fmnist_infer::data::Dataset;

    /// `n` pseudo-random images (smooth blobs plus noise) with labels 0..10.
    fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut images = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let mut img = [0u8; 784];
            let label = (crate::wide::kernels::dropout_bits(seed, 0, i, 99) % 10) as u8;
            for (k, px) in img.iter_mut().enumerate() {
                let (y, x) = ((k / 28) as f32, (k % 28) as f32);
                let r = crate::wide::kernels::dropout_bits(seed, 1, i, k);
                let blob = ((y - 4.0 - 2.0 * label as f32).powi(2) + (x - 14.0).powi(2)) < 40.0;
                *px = if blob {
                    150 + (r % 100) as u8
                } else {
                    (r % 60) as u8
                };
            }
            images.push(img);
            labels.push(label);
        }
        Dataset { images, labels }
    }

    /// Adam with its defaults, a constant rate, batches of `batch`, `steps` steps, `seed`,
    /// conv2 by `conv`, no augmentation, smoothing or distillation.
    fn recipe(batch: usize, steps: u64, seed: u64, conv: Conv) -> TrainConfig {
        TrainConfig {
            model: Model::Wide,
            batch,
            steps,
            optimizer: Optimizer::Adam(AdamConfig::default()),
            schedule: Schedule::Constant,
            checkpoint_every: steps,
            seed,
            augment: Augment::default(),
            label_smoothing: 0.0,
            distill: None,
            conv,
        }
    }

    /// A fresh run of 10 steps of batch 40 (seed 9).
    fn fresh(data: &Dataset, threads: usize, conv: Conv) -> Trainer<'_, TrainWide> {
        Trainer::new(recipe(40, 10, 9, conv), data, threads).unwrap()
    }

    /// What a checkpoint would hold, without the training time.
    fn snapshot(t: &Trainer<'_, TrainWide>) -> WideState {
        WideState {
            train_seconds: 0.0,
            ..TrainWide::save(&t.state()).state
        }
    }

    fn run(threads: usize, steps: usize, data: &Dataset, conv: Conv) -> WideState {
        let mut t = fresh(data, threads, conv);
        for _ in 0..steps {
            t.step();
        }
        snapshot(&t)
    }

    #[test]
    fn same_bytes_for_any_thread_count() {
        // 100 images in batches of 40: an epoch boundary and a short batch within 4 steps.
        let data = synthetic(100, 13);
        let mut each = Vec::new();
        for conv in [Conv::Direct, Conv::Winograd] {
            let one = run(1, 4, &data, conv);
            assert!(one == run(2, 4, &data, conv), "{conv:?}");
            assert!(one == run(3, 4, &data, conv), "{conv:?}");
            assert_ne!(one.params, run(1, 3, &data, conv).params);
            each.push(one);
        }
        // Winograd rounds differently: the two algorithms really are two code paths.
        assert_ne!(each[0].params, each[1].params);
    }

    #[test]
    fn distilled_runs_stay_thread_independent_and_resume_bit_identically() {
        let data = synthetic(100, 13);
        let teacher = || {
            Teacher::from_weights(vec![TrainedWeights::of::<TrainLeNet>(
                &crate::lenet::kernels::init_params(4),
            )])
        };
        let distill = teacher().recipe(0.8, 2.0);
        for augment in [
            Augment::default(),
            Augment {
                flip: true,
                shift: 1,
                ..Augment::default()
            },
        ] {
            let mut plain_cfg = recipe(40, 10, 9, Conv::Direct);
            plain_cfg.augment = augment;
            let cfg = TrainConfig {
                distill: Some(distill),
                ..plain_cfg
            };
            let start = |threads: usize| {
                let mut t = Trainer::<TrainWide>::new(cfg, &data, threads).unwrap();
                t.set_teacher(teacher()).unwrap();
                t
            };
            let mut a = start(1);
            let mut b = start(2);
            for _ in 0..4 {
                a.step();
                b.step();
            }
            assert!(
                snapshot(&a) == snapshot(&b),
                "thread count changed the weights"
            );
            let mut plain = Trainer::<TrainWide>::new(plain_cfg, &data, 1).unwrap();
            for _ in 0..4 {
                plain.step();
            }
            assert_ne!(
                snapshot(&a).params,
                snapshot(&plain).params,
                "the teacher is ignored"
            );

            let mut first = start(2);
            first.step();
            first.step();
            let mut resumed = Trainer::<TrainWide>::resume(first.state(), &data, 1).unwrap();
            resumed.set_teacher(teacher()).unwrap();
            resumed.step();
            resumed.step();
            assert!(
                snapshot(&resumed) == snapshot(&a),
                "resume changed the weights"
            );
        }
    }

    #[test]
    fn resume_is_bit_identical() {
        let data = synthetic(100, 13);
        for conv in [Conv::Direct, Conv::Winograd] {
            let straight = run(2, 5, &data, conv);
            let mut t = fresh(&data, 2, conv);
            t.step();
            t.step();
            let bytes = encode_run(&t.state());
            drop(t);
            let state = decode_run::<TrainWide>(&bytes).unwrap();
            let mut t = Trainer::<TrainWide>::resume(state, &data, 3).unwrap();
            for _ in 0..3 {
                t.step();
            }
            assert!(straight == snapshot(&t), "{conv:?}");
        }
    }

    #[test]
    fn resume_rejects_a_foreign_state() {
        let data = synthetic(100, 13);
        let state = || fresh(&data, 1, Conv::Direct).state();
        let other = synthetic(50, 13);
        assert!(Trainer::<TrainWide>::resume(state(), &other, 1).is_err());
        let short = RunState {
            optim: Moments {
                m: vec![0.0; 3],
                v: vec![0.0; 3],
            },
            ..state()
        };
        assert!(Trainer::<TrainWide>::resume(short, &data, 1).is_err());
    }

    /// `cargo test --release -p fmnist-train wide_one_epoch -- --ignored --nocapture`
    #[test]
    #[ignore = "one epoch on the real data (60,000 images: slow on a busy machine)"]
    fn wide_one_epoch() {
        let (train, test) = fmnist_infer::data::load_both(None)
            .expect("Fashion-MNIST (apt-get install dataset-fashion-mnist)");
        let steps = crate::shared::config::steps_per_epoch(train.len(), 128);
        let mut t =
            Trainer::<TrainWide>::new(recipe(128, steps, 1, Conv::Direct), &train, 2).unwrap();
        for _ in 0..steps {
            t.step();
        }
        let e = t.evaluate(&test);
        let ips = train.len() as f64 / t.train_seconds();
        println!(
            "wide: 1 epoch, test accuracy {:.2} %, loss {:.4}, {ips:.0} images/s on 2 threads",
            100.0 * e.accuracy,
            e.loss
        );
        assert!(e.accuracy >= 0.87, "test accuracy {}", e.accuracy);
    }
}
