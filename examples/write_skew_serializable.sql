-- Write skew (G2-item) at serializable: prevented.
--
-- T1 and T2 each read both rows, then each updates a different row, so no
-- write conflicts with another. Repeatable read would commit both (write
-- skew: a result no serial order gives). Serializable notices the
-- read/write dependency cycle and aborts the second commit with 40001.
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);

begin; set transaction isolation level serializable; -- T1
begin; set transaction isolation level serializable; -- T2
select * from test where id in (1, 2) order by id; -- T1. Shows 1 => 10, 2 => 20
select * from test where id in (1, 2) order by id; -- T2. Shows 1 => 10, 2 => 20
update test set value = 11 where id = 1; -- T1
update test set value = 21 where id = 2; -- T2
commit; -- T1
commit; -- T2, ERROR 40001 could not serialize access due to read/write dependencies among transactions
select * from test order by id; -- T3. Shows 1 => 11, 2 => 20
